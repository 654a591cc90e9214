"""The local stack: AWS stand-ins on loopback so the same boto3 code runs without an account."""
