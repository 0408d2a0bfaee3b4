"""Signing secrets of the test endpoints (tests/settings.py)."""

SECRET = "whsec_test_current_0123456789abcdef"
OLD_SECRET = "whsec_test_previous_fedcba9876543210"
CONNECT_SECRET = "whsec_test_connect_00112233445566"
OTHER_SECRET = "whsec_someone_elses_secret_999999"
THIN_SECRET = "whsec_test_thin_destination_0a1b2c3d"
# The platform's secret key, as the stand-in for Stripe's API sees it (tests/stripe_standin.py).
API_KEY = "sk_test_standin_platform_key"
