"""Test helpers: scripted model servers and fixtures shared by test packages."""
