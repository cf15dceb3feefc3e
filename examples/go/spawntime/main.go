// Command spawntime measures the spawn-to-ready time of a broker from Go: from
// warrentest.StartBroker until both URL lines are read, over N starts (100 by
// default); it prints p50 and p90.
//
//	go run ./spawntime [N]
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"warren/bindings/go/warrentest"
)

func main() {
	n := 100
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	times := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		began := time.Now()
		b, err := warrentest.StartBroker()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		times = append(times, time.Since(began))
		_ = b.Stop()
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("go: spawn to ready p50 %.1f ms, p90 %.1f ms over %d starts\n", ms(times[n/2]), ms(times[n*9/10]), n)
}
