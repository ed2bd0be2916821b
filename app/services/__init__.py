"""Every change of money or access, one transaction per use case."""
