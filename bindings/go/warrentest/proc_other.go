//go:build !linux

package warrentest

import "syscall"

// procAttr: only Linux can tie the broker's life to the test process's.
func procAttr() *syscall.SysProcAttr { return nil }
