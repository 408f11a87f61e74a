# A NixOS VM test of both modules, run by `nix flake check` (or
# `nix build .#checks.x86_64-linux.nixos`) on Linux with KVM: the server
# starts with its hardening, answers the Nix protocol and its health checks
# on the LAN, and the client module points a second machine's Nix at it.
# It has not run on the machine these files were written on (no nixpkgs,
# no KVM); see deploy/README.md.
{ pkgs, serverModule, clientModule }:

pkgs.testers.runNixOSTest {
  name = "nix-cache-proxy";

  nodes.cache = { config, ... }: {
    imports = [ serverModule ];
    services.nix-cache-proxy = {
      enable = true;
      openFirewall = true;
      # No network in the VM: a lookup fails upstream, which is all this
      # test needs of the upstreams.
      settings.misses.negative-ttl = "5s";
      # A token in the Nix store is fine for a test, never for a real host.
      adminTokenFile = toString (pkgs.writeText "admin-token" "test-token-0123456789");
    };
    environment.systemPackages = [ config.services.nix-cache-proxy.package ];
  };

  nodes.client = {
    imports = [ clientModule ];
    nix-cache-proxy.client = {
      enable = true;
      url = "http://cache:5575";
    };
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    start_all()
    cache.wait_for_unit("nix-cache-proxy.service")
    cache.wait_for_open_port(5575)
    cache.succeed("nix-cache-proxy healthcheck --server http://127.0.0.1:5575")
    cache.succeed("nix-cache-proxy healthcheck --ready --server http://127.0.0.1:5575")
    # The hardening holds and the cache lives in the state directory.
    cache.succeed("systemctl show nix-cache-proxy -p DynamicUser | grep -q yes")
    cache.succeed("test -e /var/lib/nix-cache-proxy/index.db")
    cache.fail("journalctl -u nix-cache-proxy | grep -q test-token")

    client.wait_for_unit("multi-user.target")
    client.succeed("curl -sf http://cache:5575/nix-cache-info | grep -q 'StoreDir: /nix/store'")
    client.succeed("nix --extra-experimental-features nix-command store ping --store http://cache:5575")
    client.succeed("grep -q 'http://cache:5575' /etc/nix/nix.conf")
    client.succeed("grep -q 'narinfo-cache-negative-ttl = 60' /etc/nix/nix.conf")
    # The admin API wants the token from adminTokenFile.
    client.succeed("curl -sf -H 'Authorization: Bearer test-token-0123456789' http://cache:5575/_/pins")
    client.fail("curl -sf http://cache:5575/_/pins")
  '';
}
