"""Test helpers shared by several test areas (real servers, not mocks)."""
