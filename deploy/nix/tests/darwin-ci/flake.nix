# A nix-darwin system with the server and client modules, built on a macOS
# runner by .github/workflows/nix.yml: the real nixpkgs and nix-darwin
# build the package, check the config with check-config, shellcheck the
# activation script and validate nix.conf, as darwin-rebuild would. The
# workflow points the nix-cache-proxy input at the checkout:
#
#   nix build --no-write-lock-file --override-input nix-cache-proxy path:$PWD \
#     ./deploy/nix/tests/darwin-ci#darwinConfigurations.ci.system
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";
    nix-darwin.url = "github:nix-darwin/nix-darwin/master";
    nix-darwin.inputs.nixpkgs.follows = "nixpkgs";
    nix-cache-proxy.url = "github:nix-cache-proxy/nix-cache-proxy";
    nix-cache-proxy.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nix-darwin, nix-cache-proxy, ... }: {
    darwinConfigurations.ci = nix-darwin.lib.darwinSystem {
      modules = [
        nix-cache-proxy.darwinModules.default
        nix-cache-proxy.darwinModules.client
        {
          nixpkgs.hostPlatform = "aarch64-darwin";
          system.stateVersion = 6;
          services.nix-cache-proxy = {
            enable = true;
            settings = {
              upstream.urls = [ "https://cache.nixos.org" ];
              disk.max-size = "200GiB";
              log.format = "json";
            };
            netrcFile = "/etc/nix-cache-proxy/netrc";
          };
          nix-cache-proxy.client = {
            enable = true;
            url = "http://localhost:5575";
          };
        }
      ];
    };
  };
}
