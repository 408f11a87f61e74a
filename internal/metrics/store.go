package metrics

import (
	"context"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// StoreSource is what the store gauges read at scrape time.
type StoreSource interface {
	Stats(ctx context.Context) (store.Stats, error)
	Disk() (free, total uint64, err error)
}

// storeCollector reads the store's size and the cache dir's free space
// when scraped, so they are never stale.
type storeCollector struct {
	src     StoreSource
	bytes   *prometheus.Desc
	entries *prometheus.Desc
	free    *prometheus.Desc
	size    *prometheus.Desc
}

// RegisterStore adds the store size, entries and disk space gauges.
func RegisterStore(reg prometheus.Registerer, src StoreSource) {
	reg.MustRegister(&storeCollector{
		src: src,
		bytes: prometheus.NewDesc(namespace+"_store_size_bytes",
			"Total size of the NAR files in the cache.", nil, nil),
		entries: prometheus.NewDesc(namespace+"_store_entries",
			"Entries in the cache, by kind (narinfo, nar).", []string{"kind"}, nil),
		free: prometheus.NewDesc(namespace+"_disk_free_bytes",
			"Free bytes on the cache dir's file system (for unprivileged users).", nil, nil),
		size: prometheus.NewDesc(namespace+"_disk_size_bytes",
			"Size of the cache dir's file system.", nil, nil),
	})
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.entries
	ch <- c.free
	ch <- c.size
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := c.src.Stats(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.NARBytes))
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.NarInfos), "narinfo")
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.NARs), "nar")
	}
	if free, total, err := c.src.Disk(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(free))
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(total))
	}
}
