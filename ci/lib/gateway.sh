#!/usr/bin/env bash
# The reference gateway's inputs for `pvcompose pvroot`, in OUT:
#   rootfs/os             busybox: brings up QEMU's user network with udhcpc, host network
#   rootfs/mqtt-broker    Debian's mosquitto and its libraries, port 1883 and the
#                         unix socket /run/mqtt.sock, its xconnect service "mqtt"
#   rootfs/modbus-adapter our static modbus-adapter; config polls SIM_ADDR (the simulator);
#                         GET /metrics on /run/modbus-adapter/api.sock, its xconnect
#                         rest service "metrics" (the edge-app reads it as metrics-reader)
#   rootfs/edge-app       our static edge-app; READY once connected; no network of its
#                         own: it reaches the broker at /run/pv/mqtt.sock (xconnect)
#   config/…              the apps' _config overlays (adapter.toml, edge.toml)
#   gateway.yaml          the manifest (BSP from OUT/bsp, which `ci/mkimage bsp OUT` makes)
# Usage: ci/lib/gateway.sh OUT SIM_ADDR [RTU_DEVICE]
#   SIM_ADDR    the Modbus TCP simulator as the guest reaches it (10.0.2.2:PORT)
#   RTU_DEVICE  a serial line of the guest (/dev/ttyS1) with a Modbus RTU slave on
#               it, unit 7 at 38400 8N2: the adapter polls it too (slave meter1)
#               and the modbus-adapter container gets the device
set -euo pipefail
OUT=$1 SIM_ADDR=$2 RTU=${3:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
for t in /bin/busybox /usr/sbin/mosquitto; do
    [ -x "$t" ] || { echo "gateway: $t missing (ci/test installs busybox-static and mosquitto)" >&2; exit 1; }
done
(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
    --target x86_64-unknown-linux-gnu -p edge-app -p modbus-adapter)
BIN="$ROOT/target/x86_64-unknown-linux-gnu/release"
rm -rf "$OUT/rootfs" "$OUT/config"
mkdir -p "$OUT"/rootfs/{os,mqtt-broker,modbus-adapter,edge-app}

busybox_into() {
    mkdir -p "$1/bin"
    cp /bin/busybox "$1/bin/busybox"
    for a in sh ip sleep cat echo ls ps kill grep udhcpc; do ln -sf busybox "$1/bin/$a"; done
}
busybox_into "$OUT/rootfs/os"
install -D -m 0755 "$ROOT/ci/lib/udhcpc.script" "$OUT/rootfs/os/etc/udhcpc.script"

# mosquitto with the libraries ldd names, and a configuration for the gateway.
M="$OUT/rootfs/mqtt-broker"
install -D /usr/sbin/mosquitto "$M/usr/sbin/mosquitto"
for lib in $(ldd /usr/sbin/mosquitto | grep -o '/[^ ]*'); do
    cp -L --parents "$lib" "$M/"
done
mkdir -p "$M/etc/mosquitto" "$M/tmp"
printf 'listener 1883 0.0.0.0\nlistener 0 /run/mqtt.sock\nallow_anonymous true\nuser root\npersistence false\n' > "$M/etc/mosquitto/mosquitto.conf"
printf 'root:x:0:0:root:/:/bin/sh\n' > "$M/etc/passwd"
printf 'root:x:0:\n' > "$M/etc/group"

for app in modbus-adapter edge-app; do
    install -D "$BIN/$app" "$OUT/rootfs/$app/usr/bin/$app"
    mkdir -p "$OUT/rootfs/$app/etc" "$OUT/rootfs/$app/pantavisor"
done
mkdir -p "$OUT/config/modbus-adapter/etc/modbus-adapter" "$OUT/config/edge-app/etc/edge-app"
cat > "$OUT/config/modbus-adapter/etc/modbus-adapter/adapter.toml" <<TOML
broker = "127.0.0.1:1883"
topic_prefix = "sensors"
api = "/run/modbus-adapter/api.sock"
[[slave]]
name = "plc1"
address = "$SIM_ADDR"
poll_ms = 500
[[slave.point]]
name = "temperature"
table = "input"
register = 0
type = "i16"
scale = 0.1
[[slave.point]]
name = "pressure"
table = "input"
register = 1
type = "u16"
[[slave.point]]
name = "flow"
table = "input"
register = 2
type = "f32"
TOML
if [ -n "$RTU" ]; then
    cat >> "$OUT/config/modbus-adapter/etc/modbus-adapter/adapter.toml" <<TOML
[[slave]]
name = "meter1"
serial = "$RTU"
baud = 38400
parity = "none"
unit = 7
poll_ms = 500
timeout_ms = 500
[[slave.point]]
name = "pressure"
table = "input"
register = 1
type = "u16"
TOML
fi
cat > "$OUT/config/edge-app/etc/edge-app/edge.toml" <<TOML
broker = "unix:/run/pv/mqtt.sock"
adapter_api = "/run/pv/adapter.sock"
input = "sensors/#"
output = "edge"
window_s = 5
[[rule]]
topic = "sensors/+/temperature"
min = -40.0
max = 125.0
detector = { zscore = { window = 20, threshold = 6.0 } }
TOML

cat > "$OUT/gateway.yaml" <<'YAML'
bsp:
  kernel: bsp/vmlinuz
  initrd: bsp/initramfs.cpio.gz
  modules: bsp/modules
containers:
  os:
    rootfs: rootfs/os
    group: root
    restart_policy: system
    host_network: true
    entrypoint: [/bin/sh, -c, "ip link set lo up; exec udhcpc -f -i eth0 -s /etc/udhcpc.script -t 10 -T 1 -A 2"]
  mqtt-broker:
    rootfs: rootfs/mqtt-broker
    group: platform
    host_network: true
    provides: [{name: mqtt, type: unix, socket: /run/mqtt.sock}]
    entrypoint: [/usr/sbin/mosquitto, -c, /etc/mosquitto/mosquitto.conf]
  modbus-adapter:
    rootfs: rootfs/modbus-adapter
    group: app
    host_network: true
    restart_policy: container
    auto_recovery: {policy: always, max_retries: 100, retry_delay: 1}
    provides: [{name: metrics, type: rest, socket: /run/modbus-adapter/api.sock}]
    entrypoint: [/usr/bin/modbus-adapter]
    config_dir: config/modbus-adapter
  edge-app:
    rootfs: rootfs/edge-app
    group: app
    services:
      required:
        - {name: mqtt, type: unix, target: /run/pv/mqtt.sock}
        - {name: metrics, type: rest, target: /run/pv/adapter.sock, role: metrics-reader}
    status_goal: READY
    restart_policy: container
    auto_recovery: {policy: always, max_retries: 100, retry_delay: 1}
    entrypoint: [/usr/bin/edge-app]
    config_dir: config/edge-app
core: [os, mqtt-broker, modbus-adapter, edge-app]
config:
  remote.listen: "0.0.0.0:12368"
  remote.token: tok
  update.commit_delay: "3"
  update.goals_timeout: "40"
  update.signatures: disabled
squashfs: {comp: zstd, mtime: 1700000000}
YAML
if [ -n "$RTU" ]; then
    sed -i "s|^    config_dir: config/modbus-adapter\$|&\n    devices: [$RTU]|" "$OUT/gateway.yaml"
    grep -q "devices: \[$RTU\]" "$OUT/gateway.yaml" || { echo "gateway: could not add $RTU" >&2; exit 1; }
fi
echo "gateway: inputs in $OUT (simulator at $SIM_ADDR${RTU:+, an RTU slave on $RTU of the guest})" >&2
