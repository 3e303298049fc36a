#!/usr/bin/env bash
# Two v4l2loopback virtual cameras for morphcam, now and at every boot:
#   /dev/video10 "morphcam"       - morphcam's output; pick it in Zoom/Meet/Discord/OBS
#   /dev/video11 "morphcam input" - optional: an input that other programs (e.g. OBS's Virtual Camera) feed
# exclusive_caps=1 makes each device show up as a camera only once something writes to it
# (Chrome and WebRTC apps need that). Usage: sudo install/linux/setup-v4l2loopback.sh
set -euo pipefail
DEVICES=${DEVICES:-"10,11"}
LABELS=${LABELS:-"morphcam,morphcam input"}
OPTIONS="devices=2 video_nr=$DEVICES card_label=\"$LABELS\" exclusive_caps=1,1"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! modinfo v4l2loopback >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    $SUDO apt-get install -y v4l2loopback-dkms "linux-headers-$(uname -r)"
  elif command -v dnf >/dev/null; then
    $SUDO dnf install -y v4l2loopback
  elif command -v pacman >/dev/null; then
    $SUDO pacman -S --needed v4l2loopback-dkms linux-headers
  else
    echo "install the v4l2loopback kernel module with your package manager, then run this again" >&2
    exit 1
  fi
fi

# Load at boot with these options.
echo v4l2loopback | $SUDO tee /etc/modules-load.d/morphcam-v4l2loopback.conf >/dev/null
echo "options v4l2loopback $OPTIONS" | $SUDO tee /etc/modprobe.d/morphcam-v4l2loopback.conf >/dev/null

# Load now (reload if loaded with other options and nothing uses it).
if lsmod | grep -q '^v4l2loopback'; then
  $SUDO modprobe -r v4l2loopback || { echo "v4l2loopback is in use (close OBS/video apps) or reboot to apply" >&2; exit 1; }
fi
eval $SUDO modprobe v4l2loopback $OPTIONS
for n in ${DEVICES//,/ }; do
  [ -e "/dev/video$n" ] && echo "/dev/video$n: $(cat /sys/class/video4linux/video$n/name)"
done
echo "done. Set [bridge.sink] kind = \"virtualcam\", device = \"/dev/video${DEVICES%%,*}\"; check with: morphcam doctor"
