# The benchmarks' closure (bench/run.sh, bench/relay.sh, bench/closure.sh): n small paths of
# random text, each referring to the one before it and the one at half its
# index, a root referring to the last and to an image of imageBytes random
# bytes. The nonce makes every run's store paths new. Small paths are 1 to
# maxKiB KiB (bench/closure.sh: 60).
{ nonce, n, imageBytes, maxKiB ? 128 }:
let
  mk = name: script: builtins.derivation {
    name = "bench-${name}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    inherit nonce;
  };
  # 1 to maxKiB KiB of random bytes, base64: a spread of small package sizes.
  size = i: 1024 * (1 + (i * 37) - maxKiB * ((i * 37) / maxKiB));
  # Each small path refers to the one before it and to the one at half its
  # index: a DAG whose closure from the last one is all of them.
  deps = i: if i == 0 then "" else "${builtins.elemAt smalls (i - 1)} ${builtins.elemAt smalls (i / 2)}";
  smalls = builtins.genList (i:
    mk "small-${toString i}" "{ echo ${deps i}; head -c ${toString (size i)} /dev/urandom | base64; } > $out") n;
in rec {
  image = mk "image" "mkdir $out && head -c ${toString imageBytes} /dev/urandom > $out/disk.img";
  root = mk "root" "echo ${builtins.elemAt smalls (n - 1)} ${image} > $out";
}
