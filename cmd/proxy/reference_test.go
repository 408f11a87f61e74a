package main

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// TestConfigReference: docs/configuration.md is what config-reference
// prints now, so a setting added, moved or redescribed shows there.
func TestConfigReference(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"config-reference"}, &out, os.Stderr); code != 0 {
		t.Fatalf("config-reference: exit %d", code)
	}
	committed, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, out.Bytes()) {
		t.Errorf("docs/configuration.md is stale: run %s", regenerate)
	}
	for _, k := range fileKeys(new(fileConfig)) {
		if !bytes.Contains(out.Bytes(), []byte("| `["+k.section+"]` | `"+k.key+"` | `--"+k.flag+"` | `"+envName(k.flag)+"` |")) {
			t.Errorf("the reference has no row for %s", k.name())
		}
	}
}
