//go:build !linux

package exepages

func exeFile() (major, minor uint32, inode uint64, err error) { return 0, 0, 0, ErrUnsupported }

func dontNeed(addr, n uintptr) error { return ErrUnsupported }
