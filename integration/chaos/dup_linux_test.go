package chaos_test

import "syscall"

// dupTo makes newfd a copy of oldfd (dup2: linux/arm64 has only dup3).
func dupTo(oldfd, newfd int) error { return syscall.Dup3(oldfd, newfd, 0) }
