"""Putting tinyfleet onto boards: SD card images with the agent baked in (image, fat, firstboot,
flash) and running boards over a serial console (console, shell, board). Operator side only."""
