"""Backends apply knob configurations of one tiering solution to a host and read them back."""
