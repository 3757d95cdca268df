-- Helpers shared by every script: loom_redis.store prepends this file to each one.
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}
local CLOSING = {WORKFLOW_COMPLETED = true, WORKFLOW_FAILED = true, WORKFLOW_CANCELLED = true}
-- loom_redis.store defines above this file, for its clients count on them:
-- CLOSE_NOTICE_MS, how long a close notice outlives the close, NO_WORKFLOW, the notice
-- that ends the wait for a workflow that does not exist, EXTERNAL, the set of event types
-- that come from outside a workflow's code, and MAX_SKIPPED (see commit.lua).

-- Redis does not roll a script back: a command that fails halfway through a script
-- leaves the writes made before it. So a script reads and checks first, and writes only
-- what cannot fail: every key it writes holds its type or nothing (a key written by hand
-- would fail a later write with WRONGTYPE; keys: {key, type, key, type, ...}), and a
-- command of more arguments than Lua can pass at once goes in pieces.
-- The probe of each type: a read that the ACL rules of docs/security.md allow, which
-- fails on a key of another type (not on a missing one).
local PROBES = {hash = {'HGET', ''}, stream = {'XLEN'}, zset = {'ZCARD'}, list = {'LINDEX', 0}}
local function expect_types(keys)
  for i = 1, #keys, 2 do
    local probe = PROBES[keys[i + 1]]
    local reply = redis.pcall(probe[1], keys[i], unpack(probe, 2))
    if type(reply) == 'table' and reply.err then
      if string.sub(reply.err, 1, 9) ~= 'WRONGTYPE' then error(reply) end
      error({err = 'WRONGTYPE loom: key ' .. keys[i] .. ' is not a ' .. keys[i + 1]
        .. ' (written by something other than loom-redis): nothing was written'})
    end
  end
end

-- Lua's unpack passes at most about 8,000 values (LUAI_MAXCSTACK), so a command with a
-- long list of arguments (HSET of fields and values, HDEL of fields) is sent as several
-- commands of at most PIECE each (even: a piece never splits a field from its value).
local PIECE = 1000
local function call_in_pieces(command, key, values)
  for i = 1, #values, PIECE do
    redis.call(command, key, unpack(values, i, math.min(i + PIECE - 1, #values)))
  end
end

local function ack(queue, group, task_id)
  if task_id ~= '' then
    redis.call('XACK', queue, group, task_id)
    redis.call('XDEL', queue, task_id)
  end
end

local function append_event(history, event_type, seq, now, data)
  return redis.call('XADD', history, '*', 'type', event_type, 'seq', seq, 't', now, 'd', data)
end

-- The `count` entries of a history after entry `read_id`, if all are external events
-- (see commit.lua) and there are at most MAX_SKIPPED of them; else nil.
local function arrived_while_running(history, read_id, count)
  if read_id == '' or count < 1 or count > MAX_SKIPPED then return nil end
  local entries = redis.call('XRANGE', history, '(' .. read_id, '+', 'COUNT', count + 1)
  if #entries ~= count then return nil end
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if fields[1] ~= 'type' or not EXTERNAL[fields[2]] then return nil end
  end
  return entries
end

-- At most one workflow task per workflow waits in a queue; the meta flag 'wft' says
-- one is queued or running, so a burst of events costs one replay, not one per event.
local function request_workflow_task(meta, queue, workflow_id)
  if redis.call('HGET', meta, 'wft') ~= '1' then
    redis.call('HSET', meta, 'wft', '1')
    redis.call('XADD', queue, '*', 'k', 'w', 'wf', workflow_id)
  end
end

local function open_status(meta)
  local status = redis.call('HGET', meta, 'status')
  if not status or TERMINAL[status] then return nil, status end
  return status, status
end

-- Deliver the next task of a queue to the worker that is finishing one, in the same
-- round trip: activity tasks first (a commit takes the activity it just scheduled, so a
-- workflow's chain stays on the worker holding its instance), then workflow tasks (with
-- no backlog, the one the transition just requested). An empty consumer takes nothing.
-- Returns {stream, {id, fields}} or false.
local function take_next(group, consumer, activities, workflows)
  if consumer == '' then return false end
  for _, stream in ipairs({activities, workflows}) do
    -- Taken after the transition's writes, so it must not fail the script: a stream
    -- without its group (deleted by hand) or of another type gives no next task.
    local reply = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
      'STREAMS', stream, '>')
    if type(reply) == 'table' and reply[1] then return {stream, reply[1][2][1]} end
  end
  return false
end

-- A waiting result() blocks on the workflow's close notice list (BLMOVE from the list to
-- itself, so every waiter reads the notice and it stays). Pushed when a workflow closes
-- with a waiter registered (its start registers one), or for a waiter that comes after
-- the close, it holds the closing history entry {id, {field, value, ...}} packed, so
-- that the waiter reads nothing more; {} if there is no closing entry (the waiter reads
-- the meta).

local function push_close_notice(notice, closing)
  -- Pushed, then all but it trimmed: the list is never emptied and written again, which
  -- on a slot being moved to another master would stop the script halfway ("non local
  -- key": a key gone from the source is the target's).
  redis.call('RPUSH', notice, cmsgpack.pack(closing))
  redis.call('LTRIM', notice, -1, -1)
  redis.call('PEXPIRE', notice, CLOSE_NOTICE_MS)
end

-- The closing entry of a closed workflow's history ({} if none), for push_close_notice.
local function closing_entry(history)
  local closing = {}
  for _, entry in ipairs(redis.call('XREVRANGE', history, '+', '-', 'COUNT', 2)) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'type' and CLOSING[fields[i + 1]] then closing = entry end
    end
  end
  return closing
end
