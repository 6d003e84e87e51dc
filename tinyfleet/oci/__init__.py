"""OCI images: references, registry client, platforms, sizes and the scratch-image packer."""
