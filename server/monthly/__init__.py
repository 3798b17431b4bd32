"""The monthly proof-of-life cycle, as domain operations (``cycle``): open the month
(every member who must prove life gets the month's record and link), remind (who must
be told what, and when), close (the window is over: pending -> missed, the month's
payments settled, back-pay later through ``server.payments.settle``).

Telling people is a port (``notices.Notifier``): the SMS adapter (``sms/``) registers
itself on the app and turns "this member must be told X" into messages. Without one,
the cycle still opens and closes months; nobody is told.
"""
