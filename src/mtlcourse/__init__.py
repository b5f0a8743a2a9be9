"""mtlcourse: the companion package of the multi-task learning course.

Each module answers one question; see the course's API reference.
"""

__version__ = "0.1.0"
