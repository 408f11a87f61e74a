# A stand-in for nixpkgs' `pkgs`, enough for the server and client modules
# and for nix-darwin's own modules to evaluate (eval.nix): packages are
# fake derivations (an outPath, nothing to build); the few builders the
# modules call write their text to the store with builtins.toFile, so the
# tests can read what a real build would have written (the settings as
# JSON, the config check's script); everything else is a fake.
{ lib, system }:

let
  # The hash in a fake's path follows its contents, so two different
  # files never share a path.
  fake = name: contents:
    let
      hash = builtins.substring 0 32 (builtins.hashString "sha256" "${name}\n${contents}");
      drv = {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/${hash}-${name}";
        out = drv;
        meta.mainProgram = name;
      };
    in
    drv;
  package = name: fake name "";
  written = name: text: fake name text // { inherit text; outPath = builtins.toFile name text; };
  platform = lib.systems.elaborate system;
  # Like pkgs.formats.*: the generated file holds the value as JSON,
  # which a test turns into the real format.
  format = { }: {
    type = lib.types.attrsOf lib.types.anything;
    generate = name: value: written name (builtins.toJSON value);
  };
in
lib.genAttrs [ "bash" "bashInteractive" "coreutils" "gnugrep" "gnused" "jq" "openssh" "rsync" "shellcheck" "zsh" ] package
// {
  inherit lib;
  go.version = "1.26.0";
  nix = package "nix-2.28.0" // { version = "2.28.0"; pname = "nix"; };
  stdenv = package "stdenv" // {
    shell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
    hostPlatform = platform;
    buildPlatform = platform;
    targetPlatform = platform;
  };
  # nix-darwin's system.build.toplevel: its attributes, to read the
  # activation script and the build command that checks it.
  stdenvNoCC.mkDerivation = args: args // package args.name;
  formats = { json = format; toml = format; };
  runCommand = name: _env: script: written name script;
  runCommandLocal = name: _env: script: written name script;
  writeText = written;
  writeScript = written;
  writeTextFile = args: written args.name args.text;
  buildEnv = args: package args.name;
  # The package (deploy/nix/package.nix) with a buildGoModule that builds
  # nothing.
  callPackage = fn: args: import fn ({ inherit lib; } // args);
  buildGoModule = attrs: package "${attrs.pname}-${attrs.version}" // { inherit (attrs) meta; };
  buildGo126Module = attrs: package "${attrs.pname}-${attrs.version}" // { inherit (attrs) meta; };
}
