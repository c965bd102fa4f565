"""Sparkplug B 3.0: the gateway as an Eclipse Sparkplug edge node, beside the JSON contract.

    site.yaml `sparkplug:` ─► hook.attach_sparkplug ─► EdgeNode (a stage: sees every poll)
        poll ─► report filter (its own state, the same `report:` options) ─► DDATA row
             ─► outbox (its own SQLite file) ─► SparkplugForwarder ─► MqttSink (QoS 0)
        session: bdSeq per CONNECT (in the will NDEATH and in NBIRTH), seq 0..255 across
        NBIRTH, DBIRTH, NDATA, DDATA, DDEATH; births on connect, on the primary host's
        STATE online, and on Node/Device Control/Rebirth; DDEATH/DBIRTH as devices go/return

Modules: config (the `sparkplug:` block), topics, datatypes (a point's Sparkplug type),
payload (protobuf encoding; sparkplug_b_pb2 generated from sparkplug_b.proto), session
(bdSeq and seq), delivery (outbox to broker, acknowledged by a broker round trip), node
(the edge node), hook (the agent's one entry point). Nothing here is imported by a site
without `sparkplug:`, so such a site never loads protobuf.
"""
