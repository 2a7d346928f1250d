"""lm-eval task yamls for the paper's protocol (GSM8K-Platinum, GSM8K, MATH, MATH-500) and their functions."""
