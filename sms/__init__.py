"""The SMS gateway port (Twilio adapter and local outbox), reminder campaigns and
Twilio webhooks. Depends on ``server``, never the reverse.
"""
