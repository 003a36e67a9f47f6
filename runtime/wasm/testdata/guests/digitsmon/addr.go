package main

import "unsafe"

// addr is b's address in linear memory.
func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
