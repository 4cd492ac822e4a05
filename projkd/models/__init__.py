"""Networks for distillation."""

from .digits import DigitsCNN, digits_student, digits_teacher

__all__ = ["DigitsCNN", "digits_student", "digits_teacher"]
