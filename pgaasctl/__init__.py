"""pgaasctl: PostgreSQL as a service, declared in YAML, planned and applied like Terraform."""

__version__ = "0.1.0"
