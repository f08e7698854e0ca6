//go:build cgo

package main

// Linking runtime/cgo makes the externally linked flavor a real cgo binary
// (C runtime start-up, x_cgo_init, libc), as cgo programs are in the field.
import _ "runtime/cgo"
