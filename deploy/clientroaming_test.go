package deploy

import (
	"slices"
	"strings"
	"testing"
)

// roamingClient is a laptop's client: the relay, with discovery and a key.
const roamingClient = `{ nix-cache-proxy.client = {
	enable = true;
	url = "http://cache.lan:5575";
	roaming = true;
	relay.discover = true;
	publicKeys = [ "cache.lan-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ];
}; }`

// wantRelayArgs are the relay's arguments after the binary for roamingClient.
var wantRelayArgs = []string{"relay", "--cache", "http://cache.lan:5575", "--listen", "127.0.0.1:5576",
	"--discover", "--trusted-public-key", "cache.lan-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}

// checkRelayArgs checks the relay's command line and that the binary's
// relay command takes every flag in it.
func checkRelayArgs(t *testing.T, what string, argv []string) {
	t.Helper()
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "/nix/store/") || !strings.HasSuffix(argv[0], "/bin/nix-cache-proxy") {
		t.Fatalf("%s runs %q, want the package's nix-cache-proxy", what, argv)
	}
	if !slices.Equal(argv[1:], wantRelayArgs) {
		t.Errorf("%s runs relay with %q, want %q", what, argv[1:], wantRelayArgs)
	}
	// -h after the flags: an unknown flag or a bad value fails first.
	if _, stderr, code := run(t, nil, append(slices.Clone(argv[1:]), "-h")...); code != 0 {
		t.Errorf("%s: nix-cache-proxy %s refused its flags: %s", what, strings.Join(argv[1:], " "), stderr)
	}
}

// TestDarwinClientRoaming: with roaming, nix.conf lists the relay, not
// the cache, and a launchd daemon runs the relay once /nix/store is there;
// without it there is no relay.
func TestDarwinClientRoaming(t *testing.T) {
	var sys darwinSystem
	mustEval(t, "darwin", roamingClient, &sys)
	lines := strings.Split(sys.NixConf, "\n")
	if !slices.Contains(lines, "extra-substituters = http://127.0.0.1:5576") {
		t.Errorf("nix.conf does not list the relay:\n%s", sys.NixConf)
	}
	nixShowConfig(t, sys.NixConf)
	text := sys.Plists["org.nix-cache-proxy.relay.plist"]
	if text == "" {
		t.Fatalf("no org.nix-cache-proxy.relay.plist among %v", keys(sys.Plists))
	}
	var p struct {
		Label, UserName, StandardErrorPath string
		ProgramArguments                   []string
		RunAtLoad, KeepAlive               bool
	}
	plist(t, text, &p)
	if p.Label != "org.nix-cache-proxy.relay" || p.UserName != "nobody" || !p.RunAtLoad || !p.KeepAlive {
		t.Errorf("Label %q, UserName %q, RunAtLoad %v, KeepAlive %v", p.Label, p.UserName, p.RunAtLoad, p.KeepAlive)
	}
	const wait = "/bin/wait4path /nix/store && exec "
	a := p.ProgramArguments
	if len(a) != 3 || a[0] != "/bin/sh" || a[1] != "-c" || !strings.HasPrefix(a[2], wait) {
		t.Fatalf("ProgramArguments %q, want /bin/sh -c '%s…'", a, wait)
	}
	checkRelayArgs(t, "org.nix-cache-proxy.relay.plist", shellWords(t, strings.TrimPrefix(a[2], wait)))
	// Its log is nobody's before launchd starts it.
	if !strings.Contains(sys.Activate, "/usr/sbin/chown nobody "+p.StandardErrorPath+"\n") {
		t.Errorf("the activation script does not give %s to nobody", p.StandardErrorPath)
	}
	shellcheckActivation(t, sys)

	var plain darwinSystem
	mustEval(t, "darwin", darwinClient, &plain)
	if _, ok := plain.Plists["org.nix-cache-proxy.relay.plist"]; ok {
		t.Error("a relay daemon without roaming")
	}
}

// TestNixOSClientRoaming: with roaming, nix.settings list the relay and a
// systemd unit runs it; without it there is no unit.
func TestNixOSClientRoaming(t *testing.T) {
	var sys nixosSystem
	mustEval(t, "nixos", roamingClient, &sys)
	if got, _ := sys.NixSettings["extra-substituters"].([]any); !slices.Equal(got, []any{"http://127.0.0.1:5576"}) {
		t.Errorf("nix.settings.extra-substituters = %v, want the relay", sys.NixSettings["extra-substituters"])
	}
	u := sys.RelayService
	if u == nil {
		t.Fatal("no systemd.services.nix-cache-proxy-relay")
	}
	if !slices.Contains(u.WantedBy, "multi-user.target") || u.ServiceConfig["DynamicUser"] != true {
		t.Errorf("wantedBy %v, DynamicUser %v", u.WantedBy, u.ServiceConfig["DynamicUser"])
	}
	// Network changes are netlink messages: the unit must allow the family.
	if fam, _ := u.ServiceConfig["RestrictAddressFamilies"].([]any); !slices.Contains(fam, any("AF_NETLINK")) {
		t.Errorf("RestrictAddressFamilies %v lacks AF_NETLINK", fam)
	}
	exec, _ := u.ServiceConfig["ExecStart"].(string)
	checkRelayArgs(t, "nix-cache-proxy-relay.service", shellWords(t, exec))

	var plain nixosSystem
	mustEval(t, "nixos", nixosClient, &plain)
	if plain.RelayService != nil {
		t.Error("a relay unit without roaming")
	}
}

func keys(m map[string]string) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	return k
}
