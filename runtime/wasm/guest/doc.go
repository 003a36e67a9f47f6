// Package guest is the guest side of the reactor ABI (package abi) for Go
// programs built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared: it
// exports alloc, free, infer and describe, and calls the Handler a
// program registers from an init function (a c-shared reactor runs its
// init functions in _initialize; main is never called).
//
//	func init() {
//		guest.Describe(inputs, outputs)
//		guest.Handle(func(in []runtime.Tensor) ([]runtime.Tensor, error) { … })
//	}
//
// On other platforms the package is empty but for this comment.
package guest
