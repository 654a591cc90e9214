"""What another function installs to use connlease: for now the helper's wire contract
(`contract`), which the helper (service) and its callers (the invoke adapter) share."""
