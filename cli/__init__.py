"""`connlease`, the operator's command line: a quota's status, its leases, changing it,
force-releasing a stuck lease, watching it live and reconciling it with MySQL's own count.

A driving adapter like the functions' handlers: it parses the command line, builds what
it needs through the composition root (service.bootstrap.build_console) and calls the
domain's LeaseStore, as the helper does."""
