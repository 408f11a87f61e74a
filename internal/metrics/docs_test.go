package metrics

import (
	"context"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
	"github.com/prometheus/client_golang/prometheus"
)

// keptCollectors is a Registerer that keeps what is registered on it.
type keptCollectors []prometheus.Collector

func (c *keptCollectors) Register(col prometheus.Collector) error {
	*c = append(*c, col)
	return nil
}

func (c *keptCollectors) MustRegister(cols ...prometheus.Collector) { *c = append(*c, cols...) }

func (c *keptCollectors) Unregister(prometheus.Collector) bool { return false }

type noStore struct{}

func (noStore) Stats(context.Context) (store.Stats, error) { return store.Stats{}, nil }
func (noStore) Disk() (uint64, uint64, error)              { return 0, 0, nil }

// TestDocsTable: the metrics table of docs/operations.md lists every
// metric the server registers (what cmd/proxy's stack and serve register:
// New, RegisterStore, RegisterPrefetch, RegisterConnections,
// RegisterWarms), and nothing else.
func TestDocsTable(t *testing.T) {
	var reg keptCollectors
	New(&reg)
	RegisterStore(&reg, noStore{})
	RegisterPrefetch(&reg, func() int { return 0 })
	RegisterConnections(&reg, func() int { return 0 }, 0)
	RegisterWarms(&reg, func() []warm.Status { return nil })
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	var registered []string
	for _, c := range reg {
		ch := make(chan *prometheus.Desc, 64)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no fqName in %s", d)
			}
			if strings.HasPrefix(m[1], namespace+"_") { // not go_*, process_*
				registered = append(registered, m[1])
			}
		}
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(nix_cache_proxy_[a-z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1])
	}
	sort.Strings(registered)
	sort.Strings(documented)
	if diff := cmp.Diff(registered, documented); diff != "" {
		t.Errorf("docs/operations.md's metrics table (+) against the metrics registered (-):\n%s", diff)
	}
}
