-- Helpers shared by every script: loom_redis.store prepends this file to each one.
local TERMINAL = {COMPLETED = true, FAILED = true, CANCELLED = true}

local function ack(queue, group, task_id)
  if task_id ~= '' then
    redis.call('XACK', queue, group, task_id)
    redis.call('XDEL', queue, task_id)
  end
end

local function append_event(history, event_type, seq, now, data)
  return redis.call('XADD', history, '*', 'type', event_type, 'seq', seq, 't', now, 'd', data)
end

-- At most one workflow task per workflow waits in a queue; the meta flag 'wft' says
-- one is queued or running, so a burst of events costs one replay, not one per event.
-- `carried` (optional) are more fields of the task entry.
local function request_workflow_task(meta, queue, workflow_id, carried)
  if redis.call('HGET', meta, 'wft') ~= '1' then
    redis.call('HSET', meta, 'wft', '1')
    redis.call('XADD', queue, '*', 'k', 'w', 'wf', workflow_id, unpack(carried or {}))
  end
end

-- Status index zsets are named by appending the status to a prefix of the same slot.
local function set_status(meta, index_prefix, workflow_id, old, new, now)
  if old ~= new then
    if old then redis.call('ZREM', index_prefix .. old, workflow_id) end
    redis.call('ZADD', index_prefix .. new, now, workflow_id)
    redis.call('HSET', meta, 'status', new)
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
    local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
      'STREAMS', stream, '>')
    if reply then return {stream, reply[1][2][1]} end
  end
  return false
end
