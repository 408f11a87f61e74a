package netnstest

import (
	"net"
	"testing"
)

// TestVethAndDo: a listener opened with Do in one namespace is reached
// from the other over the veth pair, and not from the test's own.
func TestVethAndDo(t *testing.T) {
	Require(t)
	a, b := New(t), New(t)
	Veth(t, a, b, "10.231.0.1/30", "10.231.0.2/30")
	var ln net.Listener
	if err := Do(a, func() (err error) {
		ln, err = net.Listen("tcp", "10.231.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	var got []byte
	if err := Do(b, func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		got = make([]byte, 2)
		_, err = c.Read(got)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hi" {
		t.Errorf("read %q", got)
	}
}
