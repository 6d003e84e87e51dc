"""Board metrics for the periodic health message. Cheap reads of /proc and /sys only: no process
spawning (`vcgencmd`), no engine calls beyond a ping - the agent must not eat the board it watches."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tinyfleet.agent import __version__
from tinyfleet.agent.board import read_text
from tinyfleet.protocol import Health

THERMAL = "sys/class/thermal/thermal_zone0/temp"
THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"


def meminfo(text: str | None) -> tuple[int | None, int | None]:
    values = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * 1024
    return values.get("MemTotal"), values.get("MemAvailable")


def cpu_temp_c(text: str | None) -> float | None:
    try:
        return round(int(text or "") / 1000.0, 1)  # millidegrees
    except ValueError:
        return None


def throttled(text: str | None) -> int | None:
    try:
        return int(text or "", 16)
    except ValueError:
        return None


def rss_bytes() -> int | None:
    text = read_text(Path("/proc/self/statm"))
    try:
        return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE") if text else None
    except (ValueError, IndexError):
        return None


class HealthProbe:
    def __init__(self, device_id: str, data_dir: Path, root: Path = Path("/")) -> None:
        self.device_id = device_id
        self.data_dir = data_dir
        self.root = root

    def sample(self, engine_reachable: bool, disk_path: str | None = None) -> Health:
        uptime = read_text(self.root / "proc/uptime")
        total, available = meminfo(read_text(self.root / "proc/meminfo"))
        disk_total = disk_free = None
        try:
            st = os.statvfs(disk_path or self.data_dir)
            disk_total, disk_free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        except OSError:
            pass
        try:
            load = tuple(round(x, 2) for x in os.getloadavg())
        except OSError:
            load = (0.0, 0.0, 0.0)
        return Health(device_id=self.device_id, ts=round(time.time(), 3),
                      uptime_seconds=float(uptime.split()[0]) if uptime else 0.0,
                      engine_reachable=engine_reachable, agent_version=__version__, load=load,  # type: ignore[arg-type]
                      mem_total_bytes=total, mem_available_bytes=available, disk_total_bytes=disk_total,
                      disk_free_bytes=disk_free, cpu_temp_c=cpu_temp_c(read_text(self.root / THERMAL)),
                      throttled=throttled(read_text(self.root / THROTTLED)), agent_rss_bytes=rss_bytes())
