//go:build !crashpoints

// Package crashpoint lets a test kill the proxy at a chosen point between
// two durable steps (a rename and its index row, a row and its file's
// removal), to prove a crash there is finished at the next start. Built
// without the crashpoints tag, as every shipped binary is, Hit does
// nothing and reads no environment.
package crashpoint

// Hit marks the point name; it does nothing in this build.
func Hit(name string) {}
