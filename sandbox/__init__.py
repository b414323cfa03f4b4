"""Sandbox: a public-data authorized-operation enclave (公共数据授权运营沙箱)."""

__version__ = "0.1.0"
