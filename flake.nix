{
  description = "nix-cache-proxy: a LAN binary cache for Nix that pulls from upstream caches once and keeps what it serves";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      version = self.shortRev or self.dirtyShortRev or "dev";
      commit = self.rev or self.dirtyRev or "unknown";

      # The package for any nixpkgs (the modules build it with the system's
      # own pkgs, overlays and cross-compilation included). go.mod asks for
      # Go 1.26: older nixpkgs default to an older go.
      packageFor = pkgs:
        pkgs.callPackage ./deploy/nix/package.nix {
          inherit version commit;
          buildGoModule =
            if lib.versionAtLeast pkgs.go.version "1.26" then pkgs.buildGoModule else pkgs.buildGo126Module;
        };

      withPackage = file: {
        _file = file;
        key = toString file;
        imports = [ (import file { inherit packageFor; }) ];
      };
    in
    {
      packages = forAllSystems (pkgs: {
        default = packageFor pkgs;
        nix-cache-proxy = packageFor pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe (packageFor pkgs);
          meta.description = "Run nix-cache-proxy (serve, check-config, version, admin commands)";
        };
      });

      # The package builds (with its install check), and on Linux a NixOS VM
      # test of the server and client modules (deploy/nix/tests/nixos.nix).
      checks = forAllSystems (pkgs: {
        package = packageFor pkgs;
      } // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
        nixos = import ./deploy/nix/tests/nixos.nix {
          inherit pkgs;
          serverModule = self.nixosModules.default;
          clientModule = self.nixosModules.client;
        };
      });

      overlays.default = final: _prev: { nix-cache-proxy = packageFor final; };

      # services.nix-cache-proxy: the server. Imported with its file (for
      # error messages) and a key (so importing it twice is one import),
      # as lib.modules.importApply does.
      nixosModules.default = withPackage ./deploy/nix/nixos.nix;
      darwinModules.default = withPackage ./deploy/nix/darwin.nix;

      # nix-cache-proxy.client: points Nix at the server (client.nix), or
      # with roaming at a relay the module runs (a systemd unit on NixOS, a
      # launchd daemon on nix-darwin).
      nixosModules.client = withPackage ./deploy/nix/client-nixos.nix;
      darwinModules.client = withPackage ./deploy/nix/client-darwin.nix;
    };
}
