# The nix-cache-proxy package: the Go module built as a static binary named
# nix-cache-proxy, with its version and commit stamped in.
{ lib, buildGoModule, version, commit }:

buildGoModule {
  pname = "nix-cache-proxy";
  inherit version;

  # Only what the build reads, so editing docs or deploy files does not
  # rebuild it.
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [ ../../go.mod ../../go.sum ../../cmd ../../internal ];
  };

  # The NAR hash of `go mod vendor`'s output. After changing go.mod or
  # go.sum, print the new one with deploy/nix/vendor-hash.sh (CI fails
  # while it is stale), or set lib.fakeHash, run `nix build .#default` and
  # copy the hash after "got:".
  vendorHash = "sha256-yz/JW79k7WCZV9GHbcLEJsdky5nNZyrks7qxfOfth/I=";

  subPackages = [ "cmd/proxy" ];
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" "-X main.version=${version}" "-X main.commit=${commit}" ];

  # go build names the binary after its directory, cmd/proxy.
  postInstall = ''
    mv $out/bin/proxy $out/bin/nix-cache-proxy
  '';

  # The tests (./test.sh, CI) need loopback networking, and their
  # end-to-end half the nix and prometheus binaries; they are not run in
  # the build sandbox.
  doCheck = false;

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    $out/bin/nix-cache-proxy version | grep -F ${lib.escapeShellArg version}
    $out/bin/nix-cache-proxy check-config --cache-dir /nonexistent >/dev/null
    runHook postInstallCheck
  '';

  meta = {
    description = "LAN binary cache for Nix that pulls from upstream caches once and keeps what it serves";
    mainProgram = "nix-cache-proxy";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
