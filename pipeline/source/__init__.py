"""Source: Debezium's records in Kafka, decoded into change events.

A :class:`~pipeline.source.records.Converter` turns one consumed record into
a :class:`~pipeline.events.ChangeEvent` or a
:class:`~pipeline.source.records.Heartbeat`. ``kafka.format`` chooses it
(:func:`pipeline.source.converter.converter_for`):

* ``json`` — :mod:`pipeline.source.json_converter`: Kafka Connect's
  ``JsonConverter`` with schemas, each record carrying its schema;
* ``avro`` — :mod:`pipeline.source.avro_converter`: Apicurio Registry's
  ``AvroConverter`` in the Confluent wire format, schemas fetched from the
  registry by id (:mod:`pipeline.source.registry`) and each compiled into a
  reader of its own (:mod:`pipeline.source.avro_reader`).

Both hand a payload and its Connect schema to one mapping,
:mod:`pipeline.source.envelope` (Debezium's envelope to a change event), which
maps values with :mod:`pipeline.types`, so the two formats give equal events.
"""
