// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend, on loopback, in a temp dir. The binary is not a dependency of
// this module: test.sh installs it (go install
// github.com/versity/versitygw/cmd/versitygw@v1.8.0) into a tools dir and
// puts it on PATH. Tests skip without it, or fail when CI is set.
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Binary is the server's command name, looked up on PATH.
const Binary = "versitygw"

// Credentials of the server's root account.
const (
	AccessKey = "proxytest"
	SecretKey = "proxytest-secret"
)

// Server is a running versitygw.
type Server struct {
	Endpoint string // host:port
	Dir      string // the posix root: one directory per bucket
	client   *s3.Client
}

// Require skips t when versitygw is not on PATH, or fails it when CI is set.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatal("versitygw not on PATH, and CI is set (test.sh installs it)")
	}
	t.Skip("versitygw not on PATH (test.sh installs it)")
	return ""
}

// Start runs a versitygw for t, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	s := &Server{Endpoint: addr, Dir: root}
	s.client = s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + addr),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not answer on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var bucketSeq atomic.Int64

// Bucket creates a new empty bucket and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return name
}

// URL is the --storage URL of bucket (with an optional prefix).
func (s *Server) URL(bucket, prefix string) string {
	p := ""
	if prefix != "" {
		p = "/" + strings.Trim(prefix, "/")
	}
	return "s3://" + bucket + p + "?endpoint=" + s.Endpoint + "&scheme=http"
}

// Credentials returns static credentials for the server.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")
}

// Env is the environment a proxy process needs to reach the server the
// usual AWS way.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_EC2_METADATA_DISABLED=true"}
}

// Client is an S3 client on the server, for tests that look in the bucket.
func (s *Server) Client() *s3.Client { return s.client }
