"""Local servers for tests and the demo."""
