"""Apply a first-boot plan (provisioning.firstboot) to the FAT boot partition of an image or card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioning.device import DeviceSettings
from provisioning.errors import ImageError
from provisioning.fat import FatVolume
from provisioning.firstboot import SUBDIR, BootOptions, Style, detect, plan


@dataclass(frozen=True)
class Customized:
    style: Style
    written: tuple[str, ...]
    cmdline: str


def customize(volume: FatVolume, settings: DeviceSettings, options: BootOptions, style: Style | None = None,
              wheel: Path | None = None) -> Customized:
    names = volume.list()
    cmdline = volume.read_text("cmdline.txt", "")
    if not volume.exists("cmdline.txt"):
        raise ImageError(f"the boot partition has no cmdline.txt (it holds {', '.join(names) or 'nothing'}): "
                         "not a Raspberry Pi boot partition")
    assert cmdline is not None
    chosen = style or detect(names, cmdline)
    if wheel is not None:
        if not wheel.name.endswith(".whl"):
            raise ImageError(f"{wheel} is not a wheel (.whl)")
        options = BootOptions(**{**options.__dict__, "wheel_name": wheel.name})
    config = volume.read_text("config.txt", "") if options.enable_uart else None
    edits = plan(chosen, settings, options, cmdline, config)
    for name in edits.delete:
        volume.delete(name)
    for name, data in edits.files.items():
        volume.write(name, data)
    written = list(edits.files)
    if wheel is not None:
        volume.write(f"{SUBDIR}/{wheel.name}", wheel.read_bytes())
        written.append(f"{SUBDIR}/{wheel.name}")
    if edits.cmdline != cmdline:
        volume.write("cmdline.txt", edits.cmdline.encode())
        written.append("cmdline.txt")
    if edits.config_txt is not None and edits.config_txt != config:
        volume.write("config.txt", edits.config_txt.encode())
        written.append("config.txt")
    return Customized(chosen, tuple(written), edits.cmdline.strip())
