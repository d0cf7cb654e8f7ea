"""The Lua scripts behind ``RedisChannel``: every multi-step change is one atomic call.

Every key a script touches is passed in ``KEYS`` and shares the mailbox's hash tag, so the
scripts are legal on Redis Cluster. Scripts that read ``XPENDING`` or ``TIME`` (not
deterministic) before writing call ``redis.replicate_commands()`` first: Redis 6.2 needs it
(effects replication), 7.0 and later do it anyway.

Stream entries have the field ``m``: the codec's envelope bytes. A lease is an entry that
is pending for one consumer at one delivery count; a lease check (``owned``) compares both,
so a worker whose entry was reclaimed, even by itself after a restart, cannot act on it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from spark_nodes._redis_client import RETRIABLE, RedisClient, RedisPipeline

T = TypeVar("T")

__all__ = [
    "ACK",
    "CLAIM",
    "COMMIT",
    "DEAD_LETTER",
    "ID_BEFORE",
    "MOVE_DUE",
    "OWNED",
    "RELEASE",
    "REMOVE_CONSUMER",
    "RENEW",
    "REPLAY",
    "SEND",
    "SWEEP_CONSUMERS",
    "TRIM_SETTLED",
    "Scripts",
]

SEND: Final = """
-- Append envelopes at most once per producer sequence number: a retried batch whose first
-- try landed finds its sequence numbers taken and adds nothing again. A message whose
-- idempotency key was seen within the window is dropped (counted as a duplicate).
-- KEYS[1] stream, KEYS[2] stats, KEYS[3] producer's high-water mark, KEYS[4] delayed set;
-- KEYS[5..] idempotency keys.
-- ARGV[1] producer window (ms), ARGV[2] idempotency window (ms), ARGV[3] the sequence
-- number of the first message (the others follow it), ARGV[4] the messages that are
-- delayed or have an idempotency key, as "position delay_ms key_index " words (position
-- 1 is ARGV[5]; key_index 0: none); ARGV[5..] the envelopes. One argument per message:
-- redis-py encodes every argument on its own, in Python.
redis.replicate_commands()
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local seq = tonumber(ARGV[3])
local special = {}
for position, delay, key in string.gmatch(ARGV[4], '(%d+) (%d+) (%d+)') do
  special[tonumber(position)] = {tonumber(delay), tonumber(key)}
end
local added, delayed, duplicates, repeated = 0, 0, 0, 0
local now_ms = nil
for i = 5, #ARGV do
  if seq <= last then
    repeated = repeated + 1
  else
    local delay, idem = 0, 0
    local options = special[i - 4]
    if options then delay, idem = options[1], options[2] end
    local fresh = true
    if idem > 0 then
      fresh = redis.call('SET', KEYS[idem], '1', 'NX', 'PX', ARGV[2])
    end
    if not fresh then
      duplicates = duplicates + 1
    elseif delay == 0 then
      redis.call('XADD', KEYS[1], '*', 'm', ARGV[i])
      added = added + 1
    else
      if now_ms == nil then
        local t = redis.call('TIME')
        now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      redis.call('ZADD', KEYS[4], now_ms + delay, ARGV[i])
      delayed = delayed + 1
    end
  end
  seq = seq + 1
end
redis.call('SET', KEYS[3], seq - 1, 'PX', ARGV[1])
if added > 0 then redis.call('HINCRBY', KEYS[2], 'sent', added) end
if delayed > 0 then redis.call('HINCRBY', KEYS[2], 'delayed', delayed) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', duplicates) end
return {added, delayed, duplicates, repeated}
"""

OWNED: Final = """
-- The lease check: is entry `id` pending for `consumer` at exactly `deliveries`?
-- A group that is gone (the stream was deleted, a server restarted without persistence)
-- holds nothing: 0, not an error.
local function owned(stream, group, id, consumer, deliveries)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if p.err or #p == 0 then return 0 end
  if p[1][2] == consumer and tostring(p[1][4]) == deliveries then return 1 end
  return -1
end
"""

ID_BEFORE: Final = """
-- id_before(a, b): whether stream entry id a comes before b (ids are "ms-seq").
local function id_before(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
"""
"""Lua ``id_before(a, b)``, for scripts that order stream entry ids (the graph's too)."""

TRIM_SETTLED: Final = (
    ID_BEFORE
    + """
-- Drop every entry that no group still needs: those before the oldest entry pending in
-- any group, and delivered to every group. Undelivered and pending entries are never
-- dropped, and neither are acked ones behind an older pending one (until it is settled).
-- XTRIM MINID drops whole runs at once: a twentieth of the server time of an XDEL per
-- entry (6 us against 140 us for a batch of 100, on Redis 6.2).
local function trim_settled(stream)
  local bound = nil
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    local keep
    if info['pending'] > 0 then
      keep = redis.call('XPENDING', stream, info['name'])[2]
    else
      local ms, seq = string.match(info['last-delivered-id'], '(%d+)-(%d+)')
      keep = ms .. '-' .. (tonumber(seq) + 1)
    end
    if bound == nil or id_before(keep, bound) then bound = keep end
  end
  if bound ~= nil then redis.call('XTRIM', stream, 'MINID', bound) end
end
"""
)
"""Lua ``trim_settled(stream)`` (with ``id_before``): how every settling script removes
what it settled, so that no group loses an entry another group has not read yet."""


ACK: Final = (
    OWNED
    + TRIM_SETTLED
    + """
-- Fenced acks: ack and delete each entry only while its lease is ours.
-- KEYS[1] stream, KEYS[2] stats; ARGV[1] group, ARGV[2] consumer, ARGV[3] the leases as
-- "id deliveries " words, ARGV[4] how many entries the consumer may hold at most (its
-- leases are read in one XPENDING; one beyond is checked alone).
-- Returns one status per entry: 1 acked, 0 not pending (acked or dead-lettered already),
-- -1 the lease belongs to someone else now.
-- One XPENDING reads the consumer's leases, one XACK and one
-- XTRIM settle the batch: a command per entry cost 3x as much server time.
redis.replicate_commands()
local ids, counts = {}, {}
for id, deliveries in string.gmatch(ARGV[3], '(%S+) (%S+)') do
  ids[#ids + 1] = id
  counts[#counts + 1] = deliveries
end
if #ids == 0 then return {} end
local held = {}
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])
if not pending.err then
  for _, p in ipairs(pending) do held[p[1]] = tostring(p[4]) end
end
local statuses, settled = {}, {}
for i, id in ipairs(ids) do
  local status
  if held[id] == counts[i] then
    status = 1
  else
    status = owned(KEYS[1], ARGV[1], id, ARGV[2], counts[i])  -- not ours, or beyond the read
  end
  if status == 1 then settled[#settled + 1] = id end
  statuses[i] = status
end
if #settled > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(settled))
  trim_settled(KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'acked', #settled)
end
if #settled < #ids then redis.call('HINCRBY', KEYS[2], 'rejected_acks', #ids - #settled) end
return statuses
"""
)

COMMIT: Final = (
    OWNED
    + TRIM_SETTLED
    + """
-- Group commit: for each entry of a batch whose lease is ours, forward its outputs and ack
-- it; an entry whose lease was lost forwards nothing and stays (it is handled where it was
-- reclaimed). One call settles a whole batch: a call per entry cost a round trip each.
-- KEYS[1] source stream, KEYS[2] source stats, KEYS[3] result key; then per target t (from
-- 1): KEYS[2 + 2t] its stream, KEYS[3 + 2t] its stats.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] the entries as "id deliveries outputs " words
-- (outputs: how many envelopes are that entry's; "0r" marks an entry released by the
-- last entry before it that is not: it is acked only if that one is, else left pending,
-- as a window's messages go only with the output they made), ARGV[4] how many entries
-- the consumer may hold at most (its leases are read in one XPENDING; one beyond is
-- checked alone), ARGV[5] the position (from 1) of the entry whose output ARGV[6] is the
-- node's latest result, 0 for none; ARGV[7] the target of each envelope, as "t t ... "
-- words;
-- ARGV[8..] the envelopes.
-- Returns one status per entry (see ACK).
redis.replicate_commands()
local held = {}
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])
if not pending.err then
  for _, p in ipairs(pending) do held[p[1]] = tostring(p[4]) end
end
local targets = {}
for t in string.gmatch(ARGV[7], '%d+') do targets[#targets + 1] = tonumber(t) end
local statuses, settled, sent = {}, {}, {}
local used, position, keep_result = 0, 0, false
local result_at = tonumber(ARGV[5])
local anchor = 1  -- the status of the last entry not released by another
for id, deliveries, outputs, released in string.gmatch(ARGV[3], '(%S+) (%S+) (%d+)(r?) ') do
  position = position + 1
  outputs = tonumber(outputs)
  local status = 1
  if held[id] ~= deliveries then
    status = owned(KEYS[1], ARGV[1], id, ARGV[2], deliveries)  -- not ours, or beyond the read
  end
  if released == '' then
    anchor = status
  elseif status == 1 and anchor ~= 1 then
    status = -1  -- its releaser did not commit (0 on a retry: then neither is it pending)
  end
  if status == 1 then
    for j = used + 1, used + outputs do
      local t = targets[j]
      redis.call('XADD', KEYS[2 + 2 * t], '*', 'm', ARGV[7 + j])
      sent[t] = (sent[t] or 0) + 1
    end
    settled[#settled + 1] = id
    if position == result_at then keep_result = true end
  end
  used = used + outputs
  statuses[position] = status
end
for t, count in pairs(sent) do redis.call('HINCRBY', KEYS[3 + 2 * t], 'sent', count) end
if #settled > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(settled))
  trim_settled(KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'acked', #settled)
end
if #settled < position then redis.call('HINCRBY', KEYS[2], 'rejected_acks', position - #settled) end
if keep_result then redis.call('SET', KEYS[3], ARGV[6]) end
return statuses
"""
)

DEAD_LETTER: Final = (
    OWNED
    + TRIM_SETTLED
    + """
-- Move an entry to the dead-letter stream, with why, and settle it: if its lease is ours.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] stats
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] deliveries, ARGV[5] the
-- dead-letter stream's max length ('0': unbounded); then field, value pairs to record.
-- Returns the lease status (see ACK).
redis.replicate_commands()
local status = owned(KEYS[1], ARGV[1], ARGV[3], ARGV[2], ARGV[4])
if status ~= 1 then
  redis.call('HINCRBY', KEYS[3], 'rejected_acks', 1)
  return status
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[5] == '0' then
  redis.call('XADD', KEYS[2], '*', unpack(fields))
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
trim_settled(KEYS[1])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
return 1
"""
)

CLAIM: Final = (
    TRIM_SETTLED
    + """
-- Reclaim entries whose lease expired (idle past the visibility timeout), in one small
-- batch, judging each on its own delivery count: an entry already delivered max times is
-- moved to the dead-letter stream (it failed, or killed or stalled its workers, that
-- often); the others are claimed for this consumer. Entries deleted from the stream while
-- pending are dropped from the pending list. The parking consumer of given-back entries
-- (see RELEASE) is deleted once it holds none.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] stats
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] visibility timeout (ms), ARGV[4] start id,
-- ARGV[5] batch size, ARGV[6] max deliveries, ARGV[7] dead-letter max length ('0':
-- unbounded), ARGV[8] time (for the record, from the client), ARGV[9] the parking consumer
-- Returns {next start id ('0' when the scan is complete), claimed ids, their deliveries,
-- their envelopes, dead-lettered count}.
redis.replicate_commands()
local batch = tonumber(ARGV[5])
local stale = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', batch)
local ids, counts, envelopes, dead, settled = {}, {}, {}, 0, 0
local max = tonumber(ARGV[6])
local unparked = false
for _, p in ipairs(stale) do
  local id, holder, idle, deliveries = p[1], p[2], p[3], p[4]
  if holder == ARGV[9] then unparked = true end
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if #entry == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    settled = settled + 1
  elseif deliveries >= max then
    local fields = {'reason', 'max_deliveries', 'error',
      'delivered ' .. deliveries .. ' times (max_deliveries=' .. max .. ') without an ack: '
      .. 'it failed, stalled or killed its worker each time; last held by ' .. holder
      .. ' for ' .. idle .. ' ms',
      'entry', id, 'deliveries', deliveries, 'consumer', holder, 'time', ARGV[8]}
    local original = entry[1][2]
    for i = 1, #original, 2 do
      if original[i] == 'm' then
        fields[#fields + 1] = 'm'
      else
        fields[#fields + 1] = 'field:' .. original[i]
      end
      fields[#fields + 1] = original[i + 1]
    end
    if ARGV[7] == '0' then
      redis.call('XADD', KEYS[2], '*', unpack(fields))
    else
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', unpack(fields))
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    dead = dead + 1
  else
    -- JUSTID would not count a delivery; this is one, so RETRYCOUNT counts it.
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id, 'RETRYCOUNT', deliveries + 1,
      'JUSTID')
    local envelope = ''
    local original = entry[1][2]
    for i = 1, #original, 2 do
      if original[i] == 'm' then envelope = original[i + 1] end
    end
    ids[#ids + 1] = id
    counts[#counts + 1] = deliveries + 1
    envelopes[#envelopes + 1] = envelope
  end
end
if dead + settled > 0 then trim_settled(KEYS[1]) end
if unparked and #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[9]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[9])
end
if dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead_lettered', dead) end
if #ids > 0 then redis.call('HINCRBY', KEYS[3], 'reclaimed', #ids) end
local next_start = '0'
if #stale == batch then next_start = '(' .. stale[#stale][1] end
return {next_start, ids, counts, envelopes, dead}
"""
)

RENEW: Final = (
    OWNED
    + """
-- Renew the leases still ours (reset their idle time; not a new delivery).
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] "id deliveries " words.
-- Returns the status of each (see ACK).
redis.replicate_commands()
local statuses = {}
for id, deliveries in string.gmatch(ARGV[3], '(%S+) (%S+)') do
  local status = owned(KEYS[1], ARGV[1], id, ARGV[2], deliveries)
  if status == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  end
  statuses[#statuses + 1] = status
end
return statuses
"""
)

MOVE_DUE: Final = """
-- Move the delayed envelopes that are due into the stream, oldest first.
-- KEYS[1] delayed set, KEYS[2] stream, KEYS[3] stats; ARGV[1] batch size
redis.replicate_commands()
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, ARGV[1])
for _, envelope in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', envelope)
  redis.call('ZREM', KEYS[1], envelope)
end
if #due > 0 then redis.call('HINCRBY', KEYS[3], 'sent', #due) end
return #due
"""

REPLAY: Final = """
-- Put a dead letter back into its stream (a fresh entry, marked 'replayed': its message
-- was handled before) and remove it from the dead-letter stream. KEYS[1] dead-letter
-- stream, KEYS[2] stream, KEYS[3] stats;
-- ARGV[1] dead-letter entry id.
-- Returns 1 replayed, 0 no such dead letter, -1 it has no envelope to replay.
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return 0 end
local fields = entry[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'm' then
    redis.call('XADD', KEYS[2], '*', 'm', fields[i + 1], 'replayed', '1')
    redis.call('XDEL', KEYS[1], ARGV[1])
    redis.call('HINCRBY', KEYS[3], 'sent', 1)
    redis.call('HINCRBY', KEYS[3], 'replayed', 1)
    return 1
  end
end
return -1
"""

RELEASE: Final = (
    OWNED
    + """
-- Give back entries this consumer holds but will not handle: make them reclaimable at
-- once (idle = the visibility timeout); for those no handler ever had, take back the
-- delivery they counted, so the next claim does not count one that never happened.
-- They move to the parking consumer (ARGV[5]): this one then holds only what it works
-- on, and can leave the group (REMOVE_CONSUMER) while others have yet to reclaim them.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] visibility timeout (ms),
-- ARGV[4] "id deliveries uncounted " words (uncounted: 1 if no handler ever had it, so
-- the delivery is taken back; 0 keeps it), ARGV[5] the parking consumer.
-- Returns how many were released.
redis.replicate_commands()
local released = 0
for id, deliveries, uncounted in string.gmatch(ARGV[4], '(%S+) (%S+) (%S+)') do
  if owned(KEYS[1], ARGV[1], id, ARGV[2], deliveries) == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, id, 'IDLE', ARGV[3],
      'RETRYCOUNT', tonumber(deliveries) - tonumber(uncounted), 'JUSTID')
    released = released + 1
  end
end
return released
"""
)


REMOVE_CONSUMER: Final = """
-- Delete a consumer from its group, but only if it holds no entry: XGROUP DELCONSUMER
-- drops the consumer's pending entries with it, and they would never be delivered again.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer.
-- Returns 1 when the consumer is gone (deleted, or there was none), 0 when it holds
-- entries and stays.
redis.replicate_commands()
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if pending.err then return 1 end  -- no stream or no group: no consumer either
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

SWEEP_CONSUMERS: Final = """
-- Delete the group's consumers that hold no entry and have not read or claimed for longer
-- than the bound: dead workers, once their entries were reclaimed (a consumer that holds
-- entries is never deleted: they would be lost). A live consumer reads every `block`;
-- one deleted anyway (it paused longer than the bound) comes back with its next read.
-- XINFO CONSUMERS reports `idle` since the last read or claim on Redis 6.2 and 7.x.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] the most idle time kept (ms), ARGV[3] the
-- sweeping consumer (never deleted: it is live).
-- Returns the names deleted.
redis.replicate_commands()
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then return {} end
local max_idle = tonumber(ARGV[2])
local deleted = {}
for _, reply in ipairs(consumers) do
  local info = {}
  for i = 1, #reply, 2 do info[reply[i]] = reply[i + 1] end
  if info['pending'] == 0 and info['idle'] > max_idle and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted[#deleted + 1] = info['name']
  end
end
return deleted
"""


PUBLISH_HELD: Final = """
-- Record which entries a consumer holds on purpose (a window's), for Graph.wait_idle: one
-- field per consumer and entry, "consumer id" -> "deliveries deadline" (its lease, and
-- when it lapses unless published again: now + the visibility timeout, in server ms).
-- KEYS[1] the mailbox's held hash. ARGV[1] consumer, ARGV[2] visibility timeout (ms),
-- ARGV[3] the entries no longer held, as "id " words; ARGV[4] those held, as
-- "id deliveries " words. The hash expires 3 visibility timeouts after the last call.
redis.replicate_commands()
local now = redis.call('TIME')
local deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  + tonumber(ARGV[2])
for id in string.gmatch(ARGV[3], '(%S+) ') do
  redis.call('HDEL', KEYS[1], ARGV[1] .. ' ' .. id)
end
for id, deliveries in string.gmatch(ARGV[4], '(%S+) (%S+) ') do
  redis.call('HSET', KEYS[1], ARGV[1] .. ' ' .. id, deliveries .. ' ' .. deadline)
end
redis.call('PEXPIRE', KEYS[1], 3 * tonumber(ARGV[2]))
return 1
"""


class Scripts:
    """A channel's Lua scripts, registered on its client (each loaded once per server).

    Called directly, a script loads itself when the server does not know it. In a
    pipeline, redis-py would check all its scripts first, in an extra round trip per
    pipeline; so pipelines queue ``EVALSHA`` themselves (:meth:`queue`) after
    :meth:`load`, which a server restart (seen as a connection error) makes necessary
    again.
    """

    __slots__ = (
        "ack",
        "claim",
        "commit",
        "dead_letter",
        "loaded",
        "move_due",
        "publish_held",
        "release",
        "remove_consumer",
        "renew",
        "replay",
        "send",
        "sweep_consumers",
    )

    def __init__(self, redis: RedisClient) -> None:
        self.send = redis.register_script(SEND)
        self.ack = redis.register_script(ACK)
        self.commit = redis.register_script(COMMIT)
        self.dead_letter = redis.register_script(DEAD_LETTER)
        self.claim = redis.register_script(CLAIM)
        self.renew = redis.register_script(RENEW)
        self.move_due = redis.register_script(MOVE_DUE)
        self.publish_held = redis.register_script(PUBLISH_HELD)
        self.replay = redis.register_script(REPLAY)
        self.release = redis.register_script(RELEASE)
        self.remove_consumer = redis.register_script(REMOVE_CONSUMER)
        self.sweep_consumers = redis.register_script(SWEEP_CONSUMERS)
        self.loaded = False

    async def load(self, redis: RedisClient) -> None:
        """Make sure the server knows every script queued in pipelines (one round trip)."""
        scripts = (self.ack, self.commit, self.claim, self.move_due, self.sweep_consumers)
        if isinstance(redis, RedisCluster):
            # A cluster client refuses SCRIPT LOAD in a pipeline; alone it goes to every master.
            for script in scripts:
                await redis.script_load(script.script)
        else:
            async with redis.pipeline(transaction=False) as pipe:
                for script in scripts:
                    pipe.script_load(script.script)
                await pipe.execute()
        self.loaded = True

    @staticmethod
    def queue(pipe: RedisPipeline, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` in ``pipe`` by its sha (see the class docstring)."""
        # execute_command, as redis-py's ClusterPipeline refuses its evalsha method; the
        # command itself is fine there: a script's keys share one slot.
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def run(self, call: Awaitable[T]) -> T:
        """Await a call that may use the scripts by sha (a pipeline, say).

        Raises:
            ConnectionError: The server lost its scripts (a restart): retry, which loads
                them again.
            BaseException: What the call raised; after a connection error the scripts are
                loaded again before the next pipeline.
        """
        try:
            return await call
        except RETRIABLE:
            self.loaded = False  # the server may come back without them
            raise
        except NoScriptError as error:
            self.loaded = False
            raise RedisConnectionError("the server lost its scripts: load them again") from error
