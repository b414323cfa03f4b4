"""The kernel: errors, time, the classification vocabulary, control-plane tables, settings.

Everything else in the project may import it; it imports nothing else of the project.
"""
