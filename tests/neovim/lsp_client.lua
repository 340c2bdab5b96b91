-- lmscope's daemon driven by a real third-party LSP client: Debian's Neovim (0.7.x), headless.
-- Run by tests/test_neovim_client.py as
--   nvim --headless --clean -u NONE -n -c 'luafile tests/neovim/lsp_client.lua'
-- with these environment variables:
--   LMSCOPE_PYTHON        the interpreter that runs `-m lmscope serve --stdio`
--   LMSCOPE_NVIM_RESULT   where the JSON report is written
--   LMSCOPE_NVIM_HOVER    a file holding the reference L23H0
--   LMSCOPE_NVIM_PROMPTS  a .prompts.txt file (one prompt a line)
--   LMSCOPE_NVIM_LOG      the daemon's log file (optional)
--   LMSCOPE_NVIM_DEADLINE seconds before the script gives up (default 600)
--
-- Only the Lua API Neovim 0.7 has: vim.lsp.start_client + vim.lsp.buf_attach_client (vim.lsp.start
-- is 0.8+), client.request_sync, vim.lsp.codelens, vim.lsp.handlers. The client is started as a
-- plain user would: no init_options, so `initialize` carries no initializationOptions at all.
-- Whatever happens, the script writes its report and quits: status 0 when every step got what
-- it asked for, 1 on any failure, 124 at the deadline (a watchdog timer, so CI never hangs).

local IOI = "When Mary and John went to the store, John gave a drink to"
local REFERENCE = "L23H0"

local report = { steps = {}, errors = {}, notifications = {}, timings = {} }
local started = vim.loop.hrtime()
local deadline_s = tonumber(os.getenv("LMSCOPE_NVIM_DEADLINE") or "600")
local out_path = os.getenv("LMSCOPE_NVIM_RESULT") or "lmscope-nvim-result.json"

local function elapsed_s()
  return (vim.loop.hrtime() - started) / 1e9
end

local function left_ms()
  return math.max(0, math.floor((deadline_s - elapsed_s()) * 1000))
end

local function write_report()
  report.elapsed_s = elapsed_s()
  report.nvim_version = tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch
  local ok, text = pcall(vim.json.encode, report)
  if not ok then
    text = '{"errors": [{"where": "report", "message": "cannot encode the report"}]}'
  end
  local file = io.open(out_path, "w")
  if file then
    file:write(text)
    file:close()
  end
end

local function fail(where, message)
  table.insert(report.errors, { where = where, message = tostring(message) })
end

-- The watchdog: a libuv timer that fires even while the script waits inside vim.wait.
local watchdog = vim.loop.new_timer()
watchdog:start(deadline_s * 1000 + 5000, 0, function()
  fail("deadline", string.format("still running after %d s", deadline_s))
  pcall(write_report)
  os.exit(124)
end)

-- Wait for `done()` at most `ms` (and never past the deadline); false on timeout.
local function wait_for(ms, done)
  return vim.wait(math.min(ms, left_ms()), done, 20)
end

-- A request through the client's own request_sync: returns the result, or nil after recording
-- the error (a JSON-RPC error, a timeout, a stopped client) under `step`.
local function request(client, step, method, params, timeout_ms, bufnr)
  local asked = elapsed_s()
  local answer, why = client.request_sync(method, params, math.min(timeout_ms, left_ms()), bufnr)
  if answer == nil then
    fail(step, string.format("%s: no answer (%s)", method, tostring(why or "the client is stopped")))
    return nil, nil
  end
  if answer.err then
    local err = answer.err
    report.steps[step] = { error = { code = err.code, message = err.message, data = err.data } }
    fail(step, string.format("%s answered error %s: %s", method, tostring(err.code), tostring(err.message)))
    return nil, err
  end
  report.timings[step] = elapsed_s() - asked
  return answer.result, nil
end

local function open_buffer(path)
  vim.cmd("edit " .. vim.fn.fnameescape(path))
  return vim.api.nvim_get_current_buf()
end

-- lmscope's own notifications, each change of state once (loading repeats with a percentage).
local function record_notification(_, params, ctx)
  local state = params and params.state or vim.NIL
  local last = report.notifications[#report.notifications]
  if not (last and last.method == ctx.method and last.state == state) then
    table.insert(report.notifications, { method = ctx.method, state = state, at_s = elapsed_s() })
  end
end

local function main()
  local python = assert(os.getenv("LMSCOPE_PYTHON"), "LMSCOPE_PYTHON is not set")
  local hover_file = assert(os.getenv("LMSCOPE_NVIM_HOVER"), "LMSCOPE_NVIM_HOVER is not set")
  local prompts_file = assert(os.getenv("LMSCOPE_NVIM_PROMPTS"), "LMSCOPE_NVIM_PROMPTS is not set")
  local cmd = { python, "-m", "lmscope", "serve", "--stdio" }
  local log = os.getenv("LMSCOPE_NVIM_LOG")
  if log and log ~= "" then
    vim.list_extend(cmd, { "--log-file", log })
  end

  -- 1. Start the client as a plain Neovim user would: no init_options.
  local init_failed = false
  -- Neovim 0.7 reports a refused initialize only as a Lua error in a scheduled callback (on
  -- stderr), never through on_error, and the client stays uninitialized for good: watch the
  -- initialize answer go by to record the error and stop waiting.
  local init_error = nil
  local rpc_start = vim.lsp.rpc.start
  vim.lsp.rpc.start = function(...)
    local rpc = rpc_start(...)
    local rpc_request = rpc.request
    rpc.request = function(method, params, callback, ...)
      if method == "initialize" then
        local inner = callback
        callback = function(err, result)
          init_error = err
          init_failed = init_failed or err ~= nil
          return inner(err, result)
        end
      end
      return rpc_request(method, params, callback, ...)
    end
    return rpc
  end
  local client_id = vim.lsp.start_client({
    name = "lmscope",
    cmd = cmd,
    root_dir = vim.fn.fnamemodify(hover_file, ":p:h"),
    handlers = {
      ["lmscope/modelChanged"] = record_notification,
      ["lmscope/traceChanged"] = record_notification,
    },
    on_error = function(code, err)
      init_failed = true
      fail("on_error", string.format("%s: %s", tostring(vim.lsp.client_errors[code] or code), tostring(err)))
    end,
    on_exit = function(code, signal)
      init_failed = true
      report.daemon_exit = { code = code, signal = signal }
    end,
  })
  vim.lsp.rpc.start = rpc_start
  if not client_id then
    fail("start", "vim.lsp.start_client returned nil")
    return
  end
  local client = vim.lsp.get_client_by_id(client_id)
  report.steps.initialize = { ok = false }
  wait_for(120000, function() return client.initialized or init_failed end)
  if init_error then
    report.steps.initialize.error = { code = init_error.code, message = init_error.message, data = init_error.data }
    fail("initialize", string.format("initialize answered error %s: %s", tostring(init_error.code), tostring(init_error.message)))
    return
  end
  if not client.initialized then
    fail("initialize", "the client never got through initialize")
    return
  end
  local caps = client.server_capabilities or {}
  report.steps.initialize = {
    ok = true,
    hoverProvider = caps.hoverProvider and true or false,
    codeLensProvider = caps.codeLensProvider ~= nil,
    lmscope = caps.experimental and caps.experimental.lmscope or vim.NIL,
  }

  -- 2. The custom requests: load the embedded default model, trace the IOI prompt.
  local loaded = request(client, "loadModel", "lmscope/loadModel", { spec = "default" }, 600000)
  if not loaded then return end
  report.steps.loadModel = { model = loaded.model.name, nLayers = loaded.model.nLayers }

  local traced = request(client, "trace", "lmscope/trace", { prompt = IOI }, 600000)
  if not traced then return end
  local summary = traced.trace
  report.steps.trace = {
    handle = summary.handle,
    prediction = summary.predictions and summary.predictions[1] and summary.predictions[1].token or vim.NIL,
  }

  -- 3. Hover the reference in a Markdown buffer attached to the client.
  local bufnr = open_buffer(hover_file)
  if not vim.lsp.buf_attach_client(bufnr, client_id) then
    fail("hover", "vim.lsp.buf_attach_client refused the buffer")
    return
  end
  local row, col
  for i, line in ipairs(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)) do
    local at = line:find(REFERENCE, 1, true)
    if at then
      row, col = i, at - 1 + 2 -- 0-based byte column, inside the reference
      break
    end
  end
  if not row then
    fail("hover", REFERENCE .. " is not in " .. hover_file)
    return
  end
  vim.api.nvim_win_set_cursor(0, { row, col })
  local params = vim.lsp.util.make_position_params()
  local hover = request(client, "hover", "textDocument/hover", params, 120000, bufnr)
  if hover == nil or hover == vim.NIL then
    if not report.steps.hover then
      fail("hover", "textDocument/hover answered null at " .. REFERENCE)
    end
    return
  end
  local contents = hover.contents or {}
  report.steps.hover = {
    position = params.position,
    kind = contents.kind or vim.NIL,
    markdown = contents.value or vim.NIL,
    range = hover.range or vim.NIL,
  }
  -- What Neovim itself shows: its hover handler renders the card in a floating window.
  local ok, float_buf, float_win = pcall(vim.lsp.handlers["textDocument/hover"], nil, hover,
    { method = "textDocument/hover", client_id = client_id, bufnr = bufnr, params = params }, {})
  if ok and float_buf then
    report.steps.hover.float_lines = vim.api.nvim_buf_get_lines(float_buf, 0, -1, false)
    pcall(vim.api.nvim_win_close, float_win, true)
  else
    fail("hover", "Neovim's hover handler showed nothing: " .. tostring(float_buf))
  end

  -- Hovering where there is no reference answers null (Neovim then shows nothing).
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  local elsewhere = vim.lsp.util.make_position_params()
  local nothing, err = request(client, "hoverElsewhere", "textDocument/hover", elsewhere, 60000, bufnr)
  if not err then
    report.steps.hoverElsewhere = { result = nothing == nil and vim.NIL or nothing }
  end

  -- 4. CodeLens on a prompt file: the raw answer, then Neovim's own codelens module.
  local prompts_buf = open_buffer(prompts_file)
  vim.lsp.buf_attach_client(prompts_buf, client_id)
  local lens_params = { textDocument = vim.lsp.util.make_text_document_params() }
  local lenses = request(client, "codeLens", "textDocument/codeLens", lens_params, 60000, prompts_buf)
  if lenses == nil then
    if not report.steps.codeLens then
      fail("codeLens", "textDocument/codeLens answered null on " .. prompts_file)
    end
    return
  end
  local listed = {}
  for _, lens in ipairs(lenses) do
    table.insert(listed, {
      line = lens.range.start.line,
      title = lens.command and lens.command.title or vim.NIL,
      command = lens.command and lens.command.command or vim.NIL,
      prompt = lens.command and lens.command.arguments and lens.command.arguments[1]
        and lens.command.arguments[1].prompt or vim.NIL,
    })
  end
  report.steps.codeLens = { lenses = listed }

  vim.lsp.codelens.refresh()
  -- codelens.get(0) does not resolve 0 to the current buffer in 0.7: pass the number.
  wait_for(60000, function() return #vim.lsp.codelens.get(prompts_buf) > 0 end)
  local shown = {}
  local ns = vim.lsp.codelens.__namespaces[client_id]
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(prompts_buf, ns, 0, -1, { details = true })) do
    local text = {}
    for _, chunk in ipairs(mark[4].virt_text or {}) do
      table.insert(text, chunk[1])
    end
    table.insert(shown, { line = mark[2], text = table.concat(text) })
  end
  report.steps.codeLens.neovim_lenses = #vim.lsp.codelens.get(prompts_buf)
  report.steps.codeLens.virtual_text = shown

  -- Running the first lens (what a user's keymap does): the lens names a VS Code command,
  -- lmscope.tracePrompt; record what Neovim makes of it (its messages go through vim.notify).
  local said = {}
  local notify = vim.notify
  vim.notify = function(message, level)
    table.insert(said, { message = tostring(message), level = level or vim.NIL })
  end
  vim.api.nvim_win_set_cursor(0, { (listed[1] and listed[1].line or 0) + 1, 0 })
  local ran, why = pcall(vim.lsp.codelens.run)
  vim.wait(math.min(2000, left_ms()), function() return #said > 0 end, 20)
  vim.notify = notify
  report.steps.codeLens.run = { ok = ran, error = ran and vim.NIL or tostring(why), messages = said }

  -- 5. Stop the client (shutdown, exit) and wait for the daemon to go.
  vim.lsp.stop_client(client_id)
  wait_for(30000, function() return report.daemon_exit ~= nil end)
  if report.daemon_exit == nil then
    fail("shutdown", "the daemon did not exit after shutdown and exit")
  end
end

local ok, err = xpcall(main, debug.traceback)
if not ok then
  fail("script", err)
end
watchdog:stop()
watchdog:close()
write_report()
if #report.errors == 0 then
  vim.cmd("qall!")
else
  vim.cmd("cquit 1")
end
