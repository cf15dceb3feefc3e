package warrentest

import "syscall"

// procAttr makes the kernel kill the broker when the test process dies (a test
// binary killed by -timeout leaves no broker behind).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
