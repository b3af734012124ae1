# cython: language_level=3
"""The per-event path of :mod:`pipeline.producer.client`, compiled: ``emit`` and the delivery report.

Plain confluent-kafka spends ~1.7 µs per produced message; in Python, ``emit``'s own frame and
attribute lookups, creating the per-event result and running its delivery report cost another
~0.8 µs. :class:`ProducerCore` (the base of :class:`~pipeline.producer.client.AuditProducer`) holds the
attributes ``emit`` reads and runs ``emit``; :class:`DeliveryCore` (the base of
:class:`~pipeline.producer.client.DeliveryResult`) holds a result's state and is its delivery callback.
Everything else (errors, flush, close, wait, await) is plain Python in those subclasses.
"""

from cpython.exc cimport PyErr_Fetch, PyErr_Occurred, PyErr_Restore
from cpython.ref cimport PyObject

import logging

from confluent_kafka import KafkaException

_log = logging.getLogger("pipeline.producer.client")


cdef class DeliveryCore:
    """State and delivery report of one emitted event (see :class:`pipeline.producer.client.DeliveryResult`).

    Only ``ProducerCore.emit`` makes them: it sets the fields itself (the others start as None).
    """

    cdef readonly object event_id
    cdef object _callback
    cdef object _producer
    # (partition, offset, latency, error) once the report arrived; None while pending
    cdef public object _outcome
    # threading.Event of wait() callers and (loop, future) of awaiting coroutines, created on first use
    cdef public object _waiting

    def __call__(self, kafka_error, message):
        # librdkafka's delivery report: the result itself is the per-message callback, which saves
        # allocating a closure per event.
        cdef PyObject* pending_type
        cdef PyObject* pending_value
        cdef PyObject* pending_traceback
        if not PyErr_Occurred():
            self._report(kafka_error, message)
            return
        # confluent-kafka runs a report with its pending fatal error still set (see
        # AuditProducer._fatal_raised). Record the outcome with that error put aside, then put it
        # back: it surfaces as before, a SystemError caused by it, which _fatal_raised handles.
        PyErr_Fetch(&pending_type, &pending_value, &pending_traceback)
        try:
            self._report(kafka_error, message)
        except BaseException:
            _log.exception("delivery report of event %s failed", self.event_id)
        PyErr_Restore(pending_type, pending_value, pending_traceback)

    cdef _report(self, kafka_error, message):
        if kafka_error is None:
            self._outcome = (message.partition(), message.offset(), message.latency(), None)
        else:
            self._outcome = (None, None, None, self._producer._delivery_failed(self, kafka_error))
        # Completion is published (above) before looking for waiters; a waiter registers itself
        # before checking done(), so (with the GIL ordering these steps) one side always sees the other.
        if self._waiting:
            self._wake()
        if self._callback is not None:
            try:
                self._callback(self)
            except Exception:
                # An exception escaping here would surface from poll() in the poll thread and
                # stop delivery reports for every other event.
                _log.exception("on_delivery callback raised for event %s", self.event_id)


cdef enum:
    SERVE_EVERY = 16


cdef class ProducerCore:
    """What ``emit`` reads, set by :class:`pipeline.producer.client.AuditProducer`, and ``emit`` itself."""

    cdef public object topic
    cdef public object _encode           # the codec's (compiled) validating encoder
    cdef public object _produce          # the confluent-kafka Producer's produce and poll, bound once
    cdef public object _poll
    cdef public object _result_type      # DeliveryResult
    cdef public object _stopped          # set once: fatal error, auth failure or close()
    cdef public bint _purge_requested
    cdef public bint _reports_served    # emit() polled since the background thread's last tick
    cdef int _unserved                  # emits since emit() last polled

    def emit(self, event, *, key=None, on_delivery=None):
        """Validate, encode and queue ``event``; return its :class:`~pipeline.producer.client.DeliveryResult` at once.

        Raises InvalidEventError (nothing sent), ProducerQueueFullError, or the error that
        stopped the producer (AuthenticationError, ProducerFatalError, ProducerClosedError).
        ``key`` picks the partition (events with one key stay in order); None spreads events.
        ``on_delivery(result)`` is called once the outcome is known, on whichever thread serves
        the report (see :mod:`pipeline.producer.client`).
        """
        if self._stopped is not None:
            raise self._stopped
        value = self._encode(event)
        # DeliveryResult(self, event_id, on_delivery), without the argument parsing of __init__
        cdef DeliveryCore result = DeliveryCore.__new__(self._result_type)
        result.event_id = event.get("event_id")
        result._callback = on_delivery
        result._producer = self
        try:
            # positional (topic, value, key, partition, on_delivery); partition -1 is librdkafka's
            # RD_KAFKA_PARTITION_UA: the configured partitioner picks
            self._produce(self.topic, value, key, -1, result)
        except BufferError:
            self._produce_when_queue_has_room(value, key, result)
        except KafkaException as exc:
            raise self._producer_error(exc) from exc
        if self._stopped is not None:
            # Stopped between the check above and produce(): purge this one too, now.
            self._purge_requested = True
        # Serve delivery reports every SERVE_EVERY emits: one poll serves all that arrived, and
        # the background thread serves them within 10 ms when the application stops emitting.
        self._unserved += 1
        if self._unserved >= SERVE_EVERY:
            self._unserved = 0
            try:
                self._poll(0)
            except (KafkaException, SystemError) as exc:
                if not self._fatal_raised(exc):
                    raise
            self._reports_served = True
        return result
