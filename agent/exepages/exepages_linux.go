package exepages

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// exeFile is the device and inode of the running executable (still right
// after the file was replaced or deleted: /proc/self/exe follows the
// mapped file, not the path).
func exeFile() (major, minor uint32, inode uint64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return 0, 0, 0, fmt.Errorf("exepages: %w", err)
	}
	return unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino, nil
}

// dontNeed is madvise(MADV_DONTNEED) on [addr, addr+n). It takes the
// address as a number, not a slice: the range is not Go memory.
func dontNeed(addr, n uintptr) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, n, unix.MADV_DONTNEED); e != 0 {
		return e
	}
	return nil
}
