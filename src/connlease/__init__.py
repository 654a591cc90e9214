"""connlease: connection-quota leases in DynamoDB for AWS Lambda functions that use MySQL."""

__version__ = "0.1.0"
