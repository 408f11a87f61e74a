//go:build !linux && !darwin

package netwatch

import "os"

func openChanges() (*os.File, error) { return nil, ErrUnsupported }

func isNoBufs(error) bool { return false }

func interesting([]byte) bool { return false }
