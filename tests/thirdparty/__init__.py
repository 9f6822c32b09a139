"""Third-party model files built in their own layouts, independently of facexai's code."""
