"""Lua scripts shared by the hub (async client) and the RQ jobs (sync client).

Each runs atomically in Redis, so a status change and the event that announces it are never apart.
"""

from __future__ import annotations

#: What separates the fields of the events given to PUBLISH_EVENTS: JSON text never holds a raw
#: control character, and keys and local tags are ids.
FIELD_SEPARATOR = "\x1f"

#: Append events to the stream. ARGV[1] = approximate max length, ARGV[2] = the events, four fields
#: each, every field followed by FIELD_SEPARATOR: dedupe hash key or '', sequence, event json, local
#: tag or ''. (One argument, not four per event: redis-py packed each argument into the command in
#: Python, 6 µs an event, on the hub's event loop.) With a key, the event is appended only if its
#: sequence is above the hash's last_seq: that is how replayed output is dropped. A local tag
#: (``hub-id:n``) marks an event its hub has already handed to its own TUIs; it is stored as the
#: entry's ``l`` field. Returns the number of events appended.
PUBLISH_EVENTS = """
local blob = ARGV[2]
local pos = 1
local function field()
  local stop = string.find(blob, '\\31', pos, true)
  local value = string.sub(blob, pos, stop - 1)
  pos = stop + 1
  return value
end
local appended = 0
while pos <= #blob do
  local key = field()
  local seq = tonumber(field())
  local data = field()
  local tag = field()
  local ok = true
  if key ~= '' then
    local last = tonumber(redis.call('HGET', key, 'last_seq') or '-1')
    if seq <= last then
      ok = false
    else
      redis.call('HSET', key, 'last_seq', seq)
    end
  end
  if ok then
    if tag ~= '' then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', data, 'l', tag)
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', data)
    end
    appended = appended + 1
  end
end
return appended
"""

#: Move an execution's status forward, and announce it, only if the new rank is higher.
#: KEYS[1] = execution hash, KEYS[2] = event stream.
#: ARGV[1] = status, ARGV[2] = rank, ARGV[3] = max stream length, ARGV[4] = event json ('' for none),
#: ARGV[5..] = field, value pairs to set with it. Returns 1 when applied.
ADVANCE_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local rank = tonumber(redis.call('HGET', KEYS[1], 'rank') or '0')
if tonumber(ARGV[2]) <= rank then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[4])
end
return 1
"""

#: Give the listed members of a sorted set the scores they already hold among themselves, in the
#: listed order; members not listed keep theirs. KEYS[1] = zset, ARGV = members in the new order.
#: Returns the number of listed members that were in the set (the caller checks all were).
REORDER = """
local scores = {}
local found = 0
for i = 1, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s then
    found = found + 1
    table.insert(scores, tonumber(s))
  end
end
if found ~= #ARGV then
  return found
end
table.sort(scores)
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', scores[i], ARGV[i])
end
return found
"""
