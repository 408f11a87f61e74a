package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// keygenCommand writes a signing key pair the way `nix key
// generate-secret` and `nix key convert-secret-to-public` do: the secret
// key file (mode 0600) for --secret-key-file, and the public key that
// clients list in trusted-public-keys, which it also prints.
func keygenCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	secretFile := fs.String("secret-key-file", "", "`file` to write the secret key to (default NAME.secret); never overwritten")
	publicFile := fs.String("public-key-file", "", "`file` to write the public key to (default NAME.public)")
	fail := func(err error) int {
		fmt.Fprintf(stderr, "nix-cache-proxy keygen: %v\nUsage: nix-cache-proxy keygen [--secret-key-file FILE] [--public-key-file FILE] NAME\n", err)
		return 1
	}
	if err := parseInterspersed(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: nix-cache-proxy keygen [--secret-key-file FILE] [--public-key-file FILE] NAME\n\nNAME is the key's name, by convention the cache's host and a number: cache.lan-1.")
		writeFlags(stdout, fs, nil)
		return 0
	} else if err != nil {
		return fail(err)
	}
	if fs.NArg() != 1 {
		return fail(errors.New("give exactly one key NAME, e.g. cache.lan-1"))
	}
	name := fs.Arg(0)
	if *secretFile == "" {
		*secretFile = name + ".secret"
	}
	if *publicFile == "" {
		*publicFile = name + ".public"
	}
	sk, pk, err := narinfo.GenerateKey(name)
	if err != nil {
		return fail(err)
	}
	if err := writeNewFile(*secretFile, sk.String(), 0o600); err != nil {
		return fail(err)
	}
	if err := writeNewFile(*publicFile, pk.String(), 0o644); err != nil {
		os.Remove(*secretFile)
		return fail(err)
	}
	fmt.Fprintf(stderr, "wrote %s (secret: give it to --secret-key-file) and %s\n", *secretFile, *publicFile)
	fmt.Fprintln(stdout, pk.String())
	return 0
}

// writeNewFile writes a file that must not exist yet: a key is never
// overwritten by accident.
func writeNewFile(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
