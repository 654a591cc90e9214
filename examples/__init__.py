"""Functions written as the README tells a user to write them; `make example` runs one."""
